"""interp: interpret Multimodal Routing models (Tsai et al., EMNLP 2020).

Stages, with data flowing one way:
data -> model -> train -> extract -> stats -> local/report -> cli.
"""

__version__ = "0.1.0"
