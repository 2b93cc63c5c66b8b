// An http.Server for an express app whose requests and responses are created
// with the app's prototypes from the start (issue 7).
//
// Express re-parents every request and response it handles with
// Object.setPrototypeOf (to its app.request / app.response). V8 then moves each
// of those objects to a slow, prototype-changed shape, and every property
// access on them in Node's own http code goes slow too. A POST with a small
// JSON body through express cost a saturated server 370 µs of CPU against 120 µs
// with the objects born with express's prototypes, and 70–80 µs with no
// framework at all (autocannon, 64 connections, on the shared bench VM).
//
// Here the server constructs requests and responses as subclasses of Node's
// classes whose prototype chain already holds the app's prototypes, and the app
// is told those are its prototypes, so express's setPrototypeOf changes nothing.
// Objects that reach the app some other way (a test's own http server) are
// re-parented as before, onto the same chain.
import { IncomingMessage, ServerResponse, createServer, type Server } from 'node:http';
import type { Express, Request, Response } from 'express';

export function createExpressServer(app: Express): Server {
  class AppRequest extends IncomingMessage {}
  class AppResponse<R extends IncomingMessage = IncomingMessage> extends ServerResponse<R> {}
  Object.setPrototypeOf(AppRequest.prototype, app.request);
  Object.setPrototypeOf(AppResponse.prototype, app.response);
  app.request = AppRequest.prototype as unknown as Request;
  app.response = AppResponse.prototype as unknown as Response;
  return createServer({ IncomingMessage: AppRequest, ServerResponse: AppResponse }, app);
}
