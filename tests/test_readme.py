"""The README documents every setting, and its two set-up commands exist and are wired into CI."""

from __future__ import annotations

from service.settings import Settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in Settings.model_fields if f"`ATTENTION_SERVE_{name.upper()}`" not in README]
    assert missing == []


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    for script in ("scripts/serve.sh", "scripts/test.sh"):
        assert f"{script} " in README
        assert (ROOT / script).stat().st_mode & 0o111
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
