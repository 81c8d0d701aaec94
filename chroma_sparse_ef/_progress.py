"""Progress bars for long work: tqdm when asked for, a silent stand-in otherwise."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


class _NoBar:
    """Has the methods the callers use, and does nothing."""

    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "text") -> Any:
    """A tqdm bar (imported only when needed) if `enabled`, else a no-op with its methods.

    tqdm.std, not tqdm.auto: a text bar works in terminals and notebooks alike, where the
    notebook widget would need ipywidgets, one more dependency for a progress bar.
    """
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc)
