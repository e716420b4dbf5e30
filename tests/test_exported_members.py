"""``compute.__all__`` lists exactly the public names the package offers (httpx's four-line test)."""

from types import ModuleType

import compute


def test_all_imports_are_exported() -> None:
    public = (name for name, value in vars(compute).items()
              if not name.startswith("_") and not isinstance(value, ModuleType))  # submodules bind too
    assert sorted(compute.__all__) == sorted(public)  # ruff (RUF022) keeps the listed order


def test_the_error_tree_imports_from_the_package() -> None:
    from compute import DeadlineError, InputError, InternalError, JobError, PolicyError, TransientError

    assert all(issubclass(cls, JobError) for cls in (InputError, TransientError, PolicyError, DeadlineError,
                                                      InternalError))
    assert TransientError("x").retryable and not InputError("x").retryable
