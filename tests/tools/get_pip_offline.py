"""Stand-in for ansible-test's pip bootstrap script (get-pip), which it downloads from a host
this machine cannot reach. Run as __main__ with pip's install arguments, it runs pip from the
pip wheel that tests/tools/test.sh fetched from PyPI and put next to this file as pip.whl."""
import os
import runpy
import sys

wheel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip.whl")
sys.path.insert(0, wheel)
sys.argv = ["pip", "install", "--ignore-installed"] + [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
