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


def test_the_callback_receiver_takes_a_signed_callback_once_and_refuses_a_forgery():
    import importlib.util
    import json
    import threading
    import time

    import requests

    from regions.services.callbacks.signature import callback_signature

    spec = importlib.util.spec_from_file_location("receiver", ROOT / "examples" / "callback-receiver" / "receiver.py")
    receiver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(receiver)
    got = []
    server = receiver.make_server("whsec_example", on_task=got.append)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/meridian"
        body = json.dumps({"id": "t1", "attempt": 1, "status": "succeeded", "result": {"ok": True}}).encode()
        signed = {"Meridian-Signature": callback_signature(body=body, secret="whsec_example",
                                                             timestamp=int(time.time()))}
        assert requests.post(url, data=body, headers=signed, timeout=5).status_code == 204
        assert requests.post(url, data=body, headers=signed, timeout=5).status_code == 204  # a retried delivery
        assert got == [json.loads(body)]
        forged = body.replace(b"succeeded", b"failed")
        r = requests.post(url, data=forged, headers=signed, timeout=5)
        assert r.status_code == 400 and "signature" in r.text
        assert requests.post(url, data=body, timeout=5).status_code == 400
        assert len(got) == 1
    finally:
        server.shutdown()
        server.server_close()
