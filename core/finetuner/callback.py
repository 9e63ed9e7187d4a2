"""Callbacks: plugins that a user passes to ``fit(callbacks=[...])``.

``finetuner.callback.Callback`` is the base class. Installed callbacks are found through the
``finetuner.callbacks`` entry-point group and resolved lazily as attributes of this module::

    from finetuner.callback import EarlyStopping   # loads only that plugin

A first-party callback whose distribution is not installed raises an error that names the
distribution to install (:mod:`finetuner.plugins.catalog`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .plugins.catalog import resolve_callback_class
from .plugins.discovery import CallbackClass, discover

if TYPE_CHECKING:
    from .context import TrainingContext

__all__ = ["Callback"]


class Callback:
    """Base class of callbacks. Every hook is optional.

    Implement any hook of :mod:`finetuner.hookspecs` as a method of the same name, taking any
    subset of ``(ctx, event)``::

        class PrintLoss(Callback):
            def finetuner_on_train_epoch_end(self, event):
                print(event.train_loss)

    Validate options in ``__init__`` and raise :class:`~finetuner.errors.ConfigError`, so a bad
    option fails where the callback is created. Declare metric keys with
    :meth:`provided_metrics` and :meth:`monitored_metrics`; keep resumable state in
    :meth:`state_dict` / :meth:`load_state_dict`.
    """

    plugin_name: ClassVar[str | None] = None
    """Name under which the callback is registered; defaults to the class name."""

    def provided_metrics(self, ctx: TrainingContext) -> Iterable[str]:
        """Full metric keys this callback returns from ``finetuner_evaluate``.

        Called once, after ``finetuner_configure``. The default provides nothing.
        """
        return ()

    def monitored_metrics(self, ctx: TrainingContext) -> Iterable[str]:
        """Metric keys (full, or a bare name one producer provides) this callback reads.

        Called once, after ``finetuner_configure``; a key nothing provides fails the fit
        before the first step. The default monitors nothing.
        """
        return ()

    def state_dict(self) -> dict[str, Any]:
        """State to save in a training checkpoint: JSON-friendly values or tensors."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run resumes."""

    def options(self) -> dict[str, Any]:
        """The options this callback was created with, recorded in the run's config.

        The default returns, for each parameter of ``__init__``, the instance attribute of the
        same name when it holds a plain value (a string, number, bool or ``None``, or a list
        or tuple of those, recorded as a list). State the callback keeps (results, counters)
        is not an option and is never recorded; override this method to record options kept
        under other names or in other forms.
        """
        names = [
            name
            for name, parameter in inspect.signature(type(self).__init__).parameters.items()
            if name != "self"
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]
        values = vars(self) if hasattr(self, "__dict__") else {}
        return {
            name: list(values[name]) if isinstance(values[name], list | tuple) else values[name]
            for name in names
            if name in values and _is_plain(values[name])
        }

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


def _is_plain(value: Any) -> bool:
    """A value a run's JSON config records as it is."""
    if isinstance(value, list | tuple):
        return all(_is_plain(item) and not isinstance(item, list | tuple) for item in value)
    return isinstance(value, str | int | float | bool | type(None))


# Discovery checks that callback entry points name a subclass of this class.
CallbackClass.register(Callback)


def __getattr__(name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    return resolve_callback_class(name)


def __dir__() -> list[str]:
    return sorted(
        {*__all__, *(info.class_name for info in discover().callbacks if info.class_name)}
    )
