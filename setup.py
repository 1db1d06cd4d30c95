"""The one build step pyproject.toml cannot declare: ship the CUDA sources of the
top-level kernels/ folder inside the package, as gridstress/_cuda/, in the wheel.

An editable install needs no copy: gridstress.kernels.tables reads kernels/ in the
source tree.  Mapping kernels/ as a package of its own instead would make
setuptools' editable install warn about the working directory on every
``make run``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNELS = Path(__file__).parent / "kernels"
SUFFIXES = (".cu", ".cuh", ".cpp")


class BuildPyWithKernels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "gridstress" / "_cuda"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(KERNELS.iterdir()):
            if source.suffix in SUFFIXES:
                shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithKernels})
