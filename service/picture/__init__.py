"""``python -m service.picture``: a PNG of the attention behind one prediction, for reports and notebooks.

It asks a running service for the prediction over the public REST API (``/v1/models/{name}:predict`` with every
attention output), then draws a title with the label and probabilities, the tokens shaded by pooling attention
and by rollout, and the self-attention of every layer and head as heatmaps with the tokens on both axes.

Drawing needs the ``explain`` extra: matplotlib is imported only in ``drawing``, only when drawing, on the Agg
canvas. The serving path never imports this package. The colour scale is ColorBrewer "Blues", as on ``/ui``.

In a notebook, ``draw(fetch_explanation("http://127.0.0.1:8000", "sentiment", None, "some text"))`` is a Figure.
"""

from service.picture.client import Explanation, PictureError, fetch_explanation
from service.picture.drawing import draw, save_png

__all__ = ["Explanation", "PictureError", "draw", "fetch_explanation", "save_png"]
