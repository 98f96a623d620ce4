from __future__ import annotations

from pathlib import Path

from model_export.tokenization import PAD_ID, encode_batch, load_tokenizer, train_tokenizer

TEXTS = ["Self-driving cars are GREAT", "I don't trust them, at all!", "cars cars cars"] * 20


def test_round_trip_offsets_and_special_ids(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=200)
    assert tokenizer.token_to_id("[PAD]") == PAD_ID
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_str())
    loaded = load_tokenizer(path)
    text = "Self-driving cars are GREAT"
    encoding = loaded.encode(text, add_special_tokens=False)
    assert encoding.ids == tokenizer.encode(text, add_special_tokens=False).ids
    for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
        assert text[start:end].lower() == token.removeprefix("##")
    assert loaded.decode(encoding.ids) == "self - driving cars are great"


def test_encode_batch_pads_and_truncates() -> None:
    tokenizer = train_tokenizer(TEXTS, vocab_size=200)
    ids, mask = encode_batch(tokenizer, ["cars", "I don't trust them, at all!", ""], max_len=4)
    assert ids.shape == (3, 4)
    assert mask.sum(axis=1).tolist() == [1, 4, 1]  # the empty text becomes one [UNK]
    assert ids[0, 1:].tolist() == [PAD_ID] * 3
