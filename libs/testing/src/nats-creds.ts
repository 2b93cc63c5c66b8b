import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nkeys } from 'nats';

type KeyPair = ReturnType<typeof nkeys.createOperator>;

/** A decentralized-auth (operator mode) nats-server setup: its config file and a user's creds file. */
export interface TestNatsCreds {
  dir: string;
  /** For `startNats({ args: ['-c', configFile] })`: operator, system account, memory resolver with the accounts preloaded. */
  configFile: string;
  /** A user of the JetStream-enabled account, as `nsc generate creds` writes it. */
  credsFile: string;
  /** A user signed by an account the server does not know: it must be refused. */
  strangerCredsFile: string;
  remove(): void;
}

const b64u = (b: Uint8Array | string): string => Buffer.from(b).toString('base64url');

/** A NATS JWT (v2 claims) for `sub`, signed by `signer`, as nsc makes them. */
function natsJwt(signer: KeyPair, sub: string, name: string, nats: Record<string, unknown>): string {
  const header = b64u(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }));
  const payload = b64u(JSON.stringify({ jti: '', iat: Math.floor(Date.now() / 1000), iss: signer.getPublicKey(), name, sub, nats: { ...nats, version: 2 } }));
  return `${header}.${payload}.${b64u(signer.sign(Buffer.from(`${header}.${payload}`)))}`;
}

function credsText(userJwt: string, seed: Uint8Array): string {
  return [
    '-----BEGIN NATS USER JWT-----',
    userJwt,
    '------END NATS USER JWT------',
    '',
    '************************* IMPORTANT *************************',
    'NKEY Seed printed below can be used to sign and prove identity.',
    'NKEYs are sensitive and should be treated as secrets.',
    '',
    '-----BEGIN USER NKEY SEED-----',
    Buffer.from(seed).toString(),
    '------END USER NKEY SEED------',
    '',
    '*************************************************************',
    '',
  ].join('\n');
}

const UNLIMITED = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };

/** Makes an operator, a system account, a JetStream account with one user, and a stranger's creds (nkeys from nats.js). */
export function makeNatsCreds(): TestNatsCreds {
  const dir = mkdtempSync(join(tmpdir(), 'cordum-nats-creds-'));
  const operator = nkeys.createOperator();
  const system = nkeys.createAccount();
  const account = nkeys.createAccount();
  const user = nkeys.createUser();
  const operatorJwt = natsJwt(operator, operator.getPublicKey(), 'test-operator', { type: 'operator' });
  const systemJwt = natsJwt(operator, system.getPublicKey(), 'SYS', { type: 'account', limits: UNLIMITED });
  const accountJwt = natsJwt(operator, account.getPublicKey(), 'cordum', { type: 'account', limits: { ...UNLIMITED, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } });
  const userJwt = natsJwt(account, user.getPublicKey(), 'worker', { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 });
  const strangerAccount = nkeys.createAccount();
  const stranger = nkeys.createUser();
  const strangerJwt = natsJwt(strangerAccount, stranger.getPublicKey(), 'stranger', { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 });

  const configFile = join(dir, 'server.conf');
  const credsFile = join(dir, 'worker.creds');
  const strangerCredsFile = join(dir, 'stranger.creds');
  writeFileSync(
    configFile,
    [
      `operator: ${operatorJwt}`,
      `system_account: ${system.getPublicKey()}`,
      'resolver: MEMORY',
      'resolver_preload: {',
      `  ${system.getPublicKey()}: ${systemJwt}`,
      `  ${account.getPublicKey()}: ${accountJwt}`,
      '}',
      '',
    ].join('\n'),
  );
  writeFileSync(credsFile, credsText(userJwt, user.getSeed()), { mode: 0o600 });
  writeFileSync(strangerCredsFile, credsText(strangerJwt, stranger.getSeed()), { mode: 0o600 });
  return { dir, configFile, credsFile, strangerCredsFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
