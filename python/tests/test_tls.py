"""TLS, mutual: the Runner and the Client check the server's certificate and show their own."""

from __future__ import annotations

import subprocess
import threading

from runnerline import Client, Runner


def make_certificates(folder):
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=py test CA", "-keyout", "ca.key", "-out", "ca.crt")
    for who, subject, extensions in [
        ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=runner", "extendedKeyUsage=clientAuth\n"),
    ]:
        (folder / f"{who}.ext").write_text(extensions)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{who}.key", "-out", f"{who}.csr")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", f"{who}.ext", "-out", f"{who}.crt")


def test_runner_and_client_over_mutual_tls(own_server, tmp_path):
    make_certificates(tmp_path)
    server = own_server(extra=["--tls-cert", str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key"),
                               "--tls-client-ca", str(tmp_path / "ca.crt")])
    security = {"tls_ca": tmp_path / "ca.crt", "tls_cert": tmp_path / "client.crt", "tls_key": tmp_path / "client.key"}
    runner = Runner(server.address, worker_id="py-tls", **security)
    thread = threading.Thread(target=lambda: runner.run(lambda job: {"over": "tls", "got": job.input}, handle_signals=False), daemon=True)
    thread.start()
    try:
        # PEM given as bytes works as well as a path.
        with Client(server.address, tls_ca=(tmp_path / "ca.crt").read_bytes(), tls_cert=tmp_path / "client.crt", tls_key=tmp_path / "client.key") as client:
            (done,) = client.wait([client.enqueue({"n": 1})], timeout=30)
        assert done["status"] == "SUCCEEDED" and done["result"] == {"over": "tls", "got": {"n": 1}}
    finally:
        runner.stop(drain=True)
        thread.join(10)
    assert not thread.is_alive()
