from . import attention  # noqa: F401
from . import functional  # noqa: F401
