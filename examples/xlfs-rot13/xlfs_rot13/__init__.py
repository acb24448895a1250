"""xlfs-xlator-rot13: the playground/rot-13 translator as an installable xlfs plugin."""
from .rot13 import Rot13, rot13

__all__ = ["Rot13", "rot13"]
