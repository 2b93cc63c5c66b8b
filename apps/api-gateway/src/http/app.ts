// Express app factory: middleware order, probes, /api/v1 routes, JSON 404 and
// the one error handler. No listening here: the composition root owns sockets.
import express, { type ErrorRequestHandler, type Express, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Registry } from 'prom-client';
import { httpMetrics, type Logger } from '@cordum/service-kit';
import { ApiError, fromBodyParserError } from './errors';
import { requestIdOf } from './request-id';
import { buildOpenApi } from './openapi';
import { authorize } from '../auth/middleware';
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

function requestContext(logger: Logger): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const requestId = requestIdOf(req.get('x-request-id'));
    res.locals['requestId'] = requestId;
    res.locals['log'] = logger.child({ request_id: requestId });
    res.setHeader('X-Request-ID', requestId);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Cache-Control', 'no-store');
    const start = Date.now();
    res.on('finish', () => {
      const fields = { method: req.method, route: routeTemplate(req), status: res.statusCode, duration_ms: Date.now() - start };
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

  app.get('/healthz', (_req, res) => {
    res.status(200).json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const r = await deps.readiness.check();
    res.status(r.ready ? 200 : 503).json(r);
  });
  app.get('/metrics', async (_req, res) => {
    res.setHeader('Content-Type', deps.registry.contentType);
    res.status(200).send(await deps.registry.metrics());
  });
  // The API description is public (no key): clients generate from it.
  const openapi = JSON.stringify(buildOpenApi());
  app.get('/api/v1/openapi.json', (_req, res) => {
    res.status(200).type('application/json').send(openapi);
  });

  const mount: Mount = (route, ...handlers) => {
    const [method, path] = route.split(' ') as [string, string];
    const guard = [authorize(deps.keys, route), ...(deps.afterAuth ?? [])];
    switch (method) {
      case 'GET':
        app.get(path, guard, ...handlers);
        break;
      case 'POST':
        app.post(path, guard, ...handlers);
        break;
      case 'PUT':
        app.put(path, guard, ...handlers);
        break;
      case 'DELETE':
        app.delete(path, guard, ...handlers);
        break;
      default:
        throw new Error(`unsupported method in route ${route}`);
    }
  };
  deps.routes(mount);

  app.use((_req, _res) => {
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
    res.status(api.status).json(api.toBody());
  };
}
