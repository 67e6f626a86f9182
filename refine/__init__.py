"""refine: make instruction-based image editors better.

Example:
    >>> import refine
    >>> from PIL import Image
    >>> request = refine.EditRequest(Image.new("RGB", (32, 32), "white"), "add a red circle")
    >>> request.instruction
    'add a red circle'

Public API (re-exports only); see the README for the map of the package.
"""

from refine.editor import Editor, Refiner, WhiteBoxEditor, compose, is_white_box
from refine.errors import ArtifactError, BackendError, ConfigError, InputError, RefineError
from refine.images import load_image
from refine.types import EditRequest, EditResult, Step

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BackendError",
    "ConfigError",
    "EditRequest",
    "EditResult",
    "Editor",
    "InputError",
    "RefineError",
    "Refiner",
    "Step",
    "WhiteBoxEditor",
    "__version__",
    "compose",
    "is_white_box",
    "load_image",
]
