"""setuptools build step (pyproject `[tool.setuptools.cmdclass]`): installs the Keras-layers start-up hook.

`reuse_nets_keras_layers.pth` must land in site-packages itself, beside the package,
or Python never reads it (`reuse_nets_keras_layers.py` says what it does). setuptools has no declarative way to put a file there in both kinds
of install: `data-files` land relative to the environment's prefix, and its editable
wheels leave them out. So `build_py` copies the file to the top of the wheel.
"""

import os

from setuptools.command.build_py import build_py

PTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reuse_nets_keras_layers.pth")


class BuildPy(build_py):
    """`build_py`, plus the start-up hook at the top of site-packages."""

    def run(self):
        super().run()
        self.copy_file(PTH, self._hook_target())

    def _hook_target(self):
        if self.editable_mode:
            # An editable wheel is made of what its build writes into `install_lib`
            # (setuptools' `editable_wheel` points it at the unpacked wheel); `build_lib`
            # is a scratch folder, thrown away.
            return os.path.join(self.get_finalized_command("install").install_lib, os.path.basename(PTH))
        return os.path.join(self.build_lib, os.path.basename(PTH))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, os.path.basename(PTH))]
