"""Start-up hook: Keras finds reuse-nets' layers in any process of an environment with reuse-nets installed.

Keras deserialises a custom layer (`"reuse_nets>ResidualBlock"`) only if its class
was registered in that process by `@keras.saving.register_keras_serializable`, and
it imports no module outside its own packages to find one. So `mlflow.keras.load_model`
of a logged reuse-nets model would fail unless the caller first imported
`reuse_nets.nn.layers`. The installed `reuse_nets_keras_layers.pth` calls `install`
at interpreter start-up; this module imports nothing that `site` has not (`sys`, `contextlib`) and puts one finder
at the head of `sys.meta_path`, which answers for no module. When Keras imports its
registry, `keras.src.saving.object_registration`, the finder steps out and wraps the
registry's lookup, `get_registered_object`, right after that module runs (so every
later `from ... import get_registered_object` gets the wrapper): a name under
`reuse_nets>` that is not registered imports `reuse_nets.nn.layers`, which registers
the layers, and is looked up again.

Lazy on purpose: a process that never deserialises a reuse-nets layer never imports
`reuse_nets`, nor anything else (no Keras, no TensorFlow). A pyfunc that ships its
own copy of the package (`code_paths`) still imports that copy first, as before the
hook. Nothing is pickled: the classes come from the installed package, and
`safe_mode=True` works as with an explicit import. The cost of a process that never
imports Keras: one function call per import.
"""

import contextlib  # already loaded at start-up, by `site`
import sys

WATCHED = "keras.src.saving.object_registration"
PREFIX = "reuse_nets>"  # names registered with `package="reuse_nets"`
LAYERS = "reuse_nets.nn.layers"


def install() -> None:
    """Hooks Keras's registry when it is next imported (nothing if it already was)."""
    if WATCHED not in sys.modules and _KerasRegistryFinder not in sys.meta_path:
        sys.meta_path.insert(0, _KerasRegistryFinder)


def _with_reuse_nets_layers(lookup):
    """`lookup` (Keras's `get_registered_object`), importing the layers on a miss under PREFIX."""

    def get_registered_object(name, custom_objects=None, module_objects=None):
        found = lookup(name, custom_objects, module_objects)
        if found is None and isinstance(name, str) and name.startswith(PREFIX) and LAYERS not in sys.modules:
            try:
                __import__(LAYERS)
            except Exception as error:  # Keras then says which class it could not locate
                import warnings

                warnings.warn(f"reuse-nets: cannot import {LAYERS}: {type(error).__name__}: {error}", stacklevel=2)
            found = lookup(name, custom_objects, module_objects)
        return found

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(get_registered_object, attribute, getattr(lookup, attribute))
    get_registered_object.__wrapped__ = lookup  # type: ignore[attr-defined]
    return get_registered_object


class _KerasRegistryFinder:
    """A `sys.meta_path` finder that finds nothing itself: it hooks the loader of WATCHED."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != WATCHED:
            return None
        sys.meta_path.remove(cls)  # one use: later imports never see it
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_wrap(module):
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # the loader's own method again
            module.get_registered_object = _with_reuse_nets_layers(module.get_registered_object)

        with contextlib.suppress(AttributeError):  # a loader that takes no attributes: Keras as it is
            loader.exec_module = exec_then_wrap  # this loader object only, for this one import
        return spec
