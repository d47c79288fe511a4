import subprocess
import sys

import critwin


def test_every_export_resolves_to_the_module_named():
    for name, module in critwin._EXPORTS.items():
        value = getattr(critwin, name)
        assert getattr(sys.modules[module], name) is value


def test_import_is_light():
    # ``import critwin`` must not pull diffusers or matplotlib: they load when a model or plot is used.
    code = "import sys, critwin; print(sorted(m for m in ('diffusers', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
