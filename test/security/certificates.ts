import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Pem {
  cert: Buffer;
  key: Buffer;
  certPath: string;
  keyPath: string;
}

/**
 * A throwaway CA with a server certificate (for 127.0.0.1 and localhost) and
 * a client certificate, made with the openssl CLI at test time.
 */
export function makeCertificates(name = "test"): { folder: string; ca: Pem; server: Pem; client: Pem } {
  const folder = mkdtempSync(join(tmpdir(), `runnerline-tls-${name}-`));
  process.once("exit", () => rmSync(folder, { recursive: true, force: true }));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: folder, stdio: "pipe" });
  const path = (file: string) => join(folder, file);
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name} test CA`, "-keyout", "ca.key", "-out", "ca.crt");
  const issue = (who: string, subject: string, extensions: string) => {
    writeFileSync(path(`${who}.ext`), extensions);
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", `${who}.key`, "-out", `${who}.csr`);
    openssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", `${who}.ext`, "-out", `${who}.crt`);
  };
  issue("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  issue("client", "/CN=runner", "extendedKeyUsage=clientAuth\n");
  const pem = (who: string): Pem => ({
    cert: readFileSync(path(`${who}.crt`)),
    key: readFileSync(path(`${who}.key`)),
    certPath: path(`${who}.crt`),
    keyPath: path(`${who}.key`),
  });
  return { folder, ca: pem("ca"), server: pem("server"), client: pem("client") };
}
