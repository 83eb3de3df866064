"""Stand-in for ansible-test's get-pip bootstrap script when ci-files.testing.ansible.com is
unreachable (only PyPI is): bootstrap pip with ensurepip, then install what was asked from PyPI."""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# ansible-test runs this with a trimmed environment; keep the system CA bundle (TLS proxies).
for ca in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
    if ca and os.path.exists(ca):
        args = ["--cert", ca] + args
        break
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
