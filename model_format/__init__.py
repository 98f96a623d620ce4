"""The model folder format, the one contract between the exporter and the service: ``model.json`` and its
signature (``document``, ``signature``) and how a version's text becomes token ids (``text``). Both packages
import it; neither imports the other. It needs only the standard library, numpy and ``tokenizers``."""
