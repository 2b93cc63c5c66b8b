// Express app factory: middleware order, probes, /api/v1 routes, JSON 404 and
// the one error handler. No listening here: the composition root owns sockets.
import express, { type ErrorRequestHandler, type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Registry } from 'prom-client';
import { httpMetrics, type Logger } from '@cordum/service-kit';
import { clusterNow } from '@cordum/redis';
import { ApiError, fromBodyParserError } from './errors';
import { requestIdOf } from './request-id';
import { commonHeaders } from './client-errors';
import { buildOpenApi } from './openapi';
import { answerRefusal, authorize } from '../auth/middleware';
import type { KeyStore } from '../auth/keys';
import type { RouteId } from '../auth/routes';

/** Registers a handler for a route of the role table; method and path come from the RouteId itself. */
export type Mount = (route: RouteId, ...handlers: RequestHandler[]) => void;

export interface Readiness {
  check(): Promise<{ ready: boolean; checks: Record<string, boolean> }>;
}

export interface AppDeps {
  keys: KeyStore;
  logger: Logger;
  registry: Registry;
  readiness: Readiness;
  routes: (mount: Mount) => void;
  /** Runs after authorize() on every mounted route (the rate limiter). */
  afterAuth?: RequestHandler[];
}

/** The matched route template (`/api/v1/jobs/:id`), never the raw path. */
function routeTemplate(req: Request): string {
  const path = (req.route as { path?: unknown } | undefined)?.path;
  return typeof path === 'string' ? `${req.baseUrl}${path}` : 'unmatched';
}

const PROBES = new Set(['/healthz', '/readyz', '/metrics']);

const METHODS = ['GET', 'POST', 'PUT', 'DELETE'] as const;
type Method = (typeof METHODS)[number];
const isMethod = (m: string): m is Method => (METHODS as readonly string[]).includes(m);
/** The order of an Allow header. */
const ALLOW_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'] as const;

function requestContext(logger: Logger): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const requestId = requestIdOf(req.get('x-request-id'));
    res.locals['requestId'] = requestId;
    // P321: a submit's job is created at this time (its "submit →" latencies include the edge's work).
    res.locals['receivedAt'] = clusterNow();
    res.locals['log'] = logger.child({ request_id: requestId });
    for (const [name, value] of Object.entries(commonHeaders(requestId))) res.setHeader(name, value);
    const start = Date.now();
    res.on('finish', () => {
      // An error answer's code (P314): the runbooks tell a 503's cause (redis_unavailable,
      // bus_unavailable, safety_unavailable…) from these lines.
      const code = res.locals['errorCode'] as string | undefined;
      const fields = { method: req.method, route: routeTemplate(req), status: res.statusCode, ...(code !== undefined ? { code } : {}), duration_ms: Date.now() - start };
      const log = res.locals['log'] as Logger;
      if (PROBES.has(req.path)) log.debug('http request', fields);
      else log.info('http request', fields);
    });
    next();
  };
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  // No SHA-1 ETag of every JSON body (express's default): API responses are not cached by
  // clients, and hashing each submit's response cost CPU per job. Routes that mean an ETag
  // (config revision) set it themselves.
  app.set('etag', false);
  app.set('trust proxy', false);
  app.use(requestContext(deps.logger));
  app.use(httpMetrics(deps.registry));
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. Node's own check answers it with no
  // body, so the server leaves it to us (http/client-errors.ts).
  app.use((req, _res, next) => {
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1 && req.headers.host === undefined) {
      throw new ApiError('bad_request', { message: 'an HTTP/1.1 request needs a Host header', headers: { Connection: 'close' } });
    }
    next();
  });

  // Every route is registered through here, so `allowed` knows each path's methods: a known path
  // asked with another method is 405 method_not_allowed naming them (Allow), never 404 (P96).
  const allowed = new Map<string, Set<Method>>();
  const route = (method: Method, path: string, ...handlers: RequestHandler[]): void => {
    let methods = allowed.get(path);
    if (!methods) allowed.set(path, (methods = new Set()));
    methods.add(method);
    switch (method) {
      case 'GET':
        app.get(path, ...handlers);
        break;
      case 'POST':
        app.post(path, ...handlers);
        break;
      case 'PUT':
        app.put(path, ...handlers);
        break;
      case 'DELETE':
        app.delete(path, ...handlers);
        break;
    }
  };

  route('GET', '/healthz', (_req, res) => {
    res.status(200).json({ status: 'ok' });
  });
  route('GET', '/readyz', async (_req, res) => {
    const r = await deps.readiness.check();
    res.status(r.ready ? 200 : 503).json(r);
  });
  route('GET', '/metrics', async (_req, res) => {
    res.setHeader('Content-Type', deps.registry.contentType);
    res.status(200).send(await deps.registry.metrics());
  });
  // The API description is public (no key): clients generate from it.
  const openapi = JSON.stringify(buildOpenApi());
  route('GET', '/api/v1/openapi.json', (_req, res) => {
    res.status(200).type('application/json').send(openapi);
  });

  const mount: Mount = (id, ...handlers) => {
    const [method, path] = id.split(' ') as [string, string];
    if (!isMethod(method)) throw new Error(`unsupported method in route ${id}`);
    route(method, path, authorize(deps.keys, id), ...(deps.afterAuth ?? []), answerRefusal, ...handlers);
  };
  deps.routes(mount);

  // Reached only when no route took the request. Express's own matching (case, trailing slash)
  // decides which paths it is on; `.all()` adds no methods to the route table express reports.
  for (const [path, methods] of allowed) {
    app.route(path).all((_req, res, next) => {
      const seen = (res.locals['allow'] as Set<Method> | undefined) ?? new Set<Method>();
      for (const m of methods) seen.add(m);
      res.locals['allow'] = seen;
      next();
    });
  }
  app.use((_req, res) => {
    const seen = res.locals['allow'] as Set<Method> | undefined;
    // HEAD is served wherever GET is (express); OPTIONS is not (no CORS): it is a 405 like any other.
    if (seen) throw new ApiError('method_not_allowed', { headers: { Allow: ALLOW_ORDER.filter((m) => seen.has(m === 'HEAD' ? 'GET' : m)).join(', ') } });
    throw new ApiError('not_found');
  });
  app.use(errorHandler());
  return app;
}

function errorHandler(): ErrorRequestHandler {
  return (err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) {
      next(err);
      return;
    }
    const log = (res.locals['log'] as Logger | undefined) ?? null;
    let api: ApiError;
    if (err instanceof ApiError) api = err;
    else {
      const mapped = fromBodyParserError(err);
      if (mapped) api = mapped;
      else {
        // A real server fault: log it in full, answer without internals.
        log?.error('unhandled error', { err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) });
        api = new ApiError('internal');
      }
    }
    if (api.status >= 500 && api.code !== 'internal') {
      log?.warn('dependency failure', { code: api.code, err: api.cause instanceof Error ? api.cause.message : undefined });
    }
    for (const [k, v] of Object.entries(api.headers)) res.setHeader(k, v);
    res.locals['errorCode'] = api.code;
    res.status(api.status).json(api.toBody());
  };
}
