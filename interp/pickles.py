"""Reading data pickles safely: a restricted unpickler, and the file checks and hash of a data file.

:class:`RestrictedUnpickler` admits numpy's array reconstruction and plain containers only; anything else
(``os.system``, ``builtins.eval``, any class) is refused in ``find_class``, before it can run. Every failure of
:func:`safe_load_pickle` (refused global, truncated or corrupt file, missing file) is a one-line
:class:`~interp.errors.DataError`.
"""

from __future__ import annotations

import hashlib
import mmap
import pickle
import struct
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from interp.errors import DataError

# (module, name) pairs the unpickler admits: numpy array / dtype / scalar reconstruction (numpy 1.x names under
# numpy.core, numpy 2.x under numpy._core), bytes as written by protocol 2 (_codecs.encode), and plain containers.
_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
    }
)

# Errors that a truncated, corrupt or foreign file raises while it is unpickled.
_UNPICKLE_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    UnicodeError,
    struct.error,
    RecursionError,
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers and refuses every other global.

    Refusal happens in :meth:`find_class`, before the named callable could be called, so nothing runs.
    ``source`` names the file in messages. Python 2 strings are decoded as latin-1 (numpy's advice).
    """

    def __init__(self, file: IO[bytes], source: str = "the pickle") -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - see class docstring
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(_refusal_message(self.source, module, name))
        if module.startswith("numpy.core.") and _has_numpy_core_private():
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _has_numpy_core_private() -> bool:
    """True on numpy >= 2, where numpy.core is a deprecated alias of numpy._core."""
    return int(np.__version__.split(".")[0]) >= 2


def _refusal_message(source: object, module: str, name: str) -> str:
    """One-line refusal naming the global (``posix.system`` is shown as ``os.system``)."""
    named = f"{module}.{name}"
    if module in ("posix", "nt"):
        named = f"os.{name} ({module}.{name})"
    return (
        f"interp refuses to load {source}: it names {named}, which is not a numpy array or plain container; "
        "nothing in it was run. Only pickles of dicts of numpy arrays (the MulT layout) are accepted: "
        "re-save the data as plain numpy arrays"
    )


def safe_load_pickle(path: Path | str) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; every failure is a one-line :class:`DataError`."""
    path = Path(path)
    check_file(path)
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, source=str(path)).load()
    except DataError:
        raise
    except MemoryError:
        # a corrupt header can announce a frame of absurd size: tell that apart from a genuinely large file
        if path.stat().st_size < (1 << 30):
            raise DataError(
                f"cannot read {path}: it is not a valid data pickle (it asks for more memory than its own size); "
                "the file may be truncated or corrupt: re-download it or regenerate it (e.g. `interp data synth`)"
            ) from None
        raise DataError(f"not enough memory to load {path}; free memory or use a smaller data file") from None
    except _UNPICKLE_ERRORS as error:
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise DataError(
            f"cannot read {path}: it is not a complete data pickle ({type(error).__name__}: {detail}); "
            "the file may be truncated or corrupt: re-download it or regenerate it (e.g. `interp data synth`)"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None


def check_file(path: Path) -> None:
    """Raise DataError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise DataError(
            f"data file {path} does not exist; pass --data PATH to a MulT pickle "
            "or create one with `interp data synth --out PATH`"
        )
    if not path.is_file():
        raise DataError(f"data path {path} is not a file; pass --data PATH to a MulT pickle")


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk_size`` bytes."""
    path = Path(path)
    check_file(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class BackgroundSha256:
    """The hex SHA-256 of a file, computed in a daemon thread started at construction, so that it overlaps other
    work on the file (:func:`interp.data.load_dataset` unpickles and checks it meanwhile). The file is hashed
    through a read-only memory map in one ``update`` call, during which hashlib holds no GIL (chunked reads where
    the file cannot be mapped). :meth:`result` waits for it; the same digest as :func:`sha256_file`.

    Nothing needs to be closed: when the caller fails before :meth:`result`, the thread finishes on its own (a
    daemon thread does not hold up the interpreter's exit).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._digest: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="interp-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self.path.open("rb") as handle:
                try:
                    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):  # empty file, or a file system that cannot map it
                    self._digest = sha256_file(self.path)
                    return
                with mapped:
                    self._digest = hashlib.sha256(mapped).hexdigest()
        except BaseException as error:  # raised to the caller by result()
            self._error = error

    def result(self) -> str:
        """The hex digest (waits for the thread); a file that cannot be read is a one-line :class:`DataError`."""
        self._thread.join()
        if isinstance(self._error, OSError):
            raise DataError(f"cannot read {self.path}: {self._error.strerror or self._error}") from None
        if self._error is not None:
            raise self._error
        assert self._digest is not None
        return self._digest
