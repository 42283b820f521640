"""The example user project stands on its own: its tests pass with nothing of
Meridian but the client distribution (no Django settings, no Celery)."""
import os
import subprocess
import sys

from tests.harness import ROOT


def test_the_example_projects_own_tests_pass_without_django():
    project = ROOT / "examples" / "acme-tasks"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # This checkout's client first, not whichever copy is installed (an editable install may be another tree's).
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(ROOT / "client")])
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django",
                          "-c", str(project / "pyproject.toml"), str(project / "tests")],
                         cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "7 passed" in out.stdout
    imports = subprocess.run([sys.executable, "-c", "import acme_tasks.tasks, sys; "
                              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'celery')))"],
                             cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert imports.stdout.strip() == "[]", imports.stdout + imports.stderr
