"""Everything is in pyproject.toml; this only keeps the development server out of the wheel.

bot/devserver.py and bot/demo.py start a throwaway Synapse for `make demo` and the tests. They are
in the source tree and in editable installs (`pip install -e .`), but not in a wheel an operator
installs to run the bot for real.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

DEVELOPMENT_ONLY = {("bot", "devserver"), ("bot", "demo")}


class BuildWithoutDevServer(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if (m[0], m[1]) not in DEVELOPMENT_ONLY]


setup(cmdclass={"build_py": BuildWithoutDevServer})
