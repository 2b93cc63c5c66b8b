import { type Server } from 'node:http';
import { type AddressInfo } from 'node:net';
import express from 'express';
import { Counter } from 'prom-client';
import { createMetricsRegistry, httpMetrics } from '../src';

describe('metrics', () => {
  it('registry carries service and pod default labels and process metrics', async () => {
    const registry = createMetricsRegistry({ service: 'scheduler', pod: 'scheduler-7' });
    new Counter({ name: 'cordum_test_total', help: 'test', registers: [registry] }).inc();
    const text = await registry.metrics();
    expect(text).toMatch(/^cordum_test_total\{service="scheduler",pod="scheduler-7"\} 1$/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total\{service="scheduler",pod="scheduler-7"\}/m);
  });

  describe('httpMetrics', () => {
    let server: Server;
    let base: string;
    const registry = createMetricsRegistry({ service: 'api-gateway', pod: 'gw-1' });

    beforeAll(async () => {
      const app = express();
      expect(() => httpMetrics(registry)).not.toThrow(); // a second app in the same process reuses the metrics
      app.use(httpMetrics(registry));
      const router = express.Router();
      router.get('/jobs/:id', (_req, res) => void res.json({ ok: true }));
      app.use('/api/v1', router);
      server = await new Promise<Server>((resolve) => {
        const s = app.listen(0, '127.0.0.1', () => resolve(s));
      });
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });

    afterAll(async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    });

    it('counts requests per route template, not per raw path', async () => {
      expect((await fetch(`${base}/api/v1/jobs/a`)).status).toBe(200);
      expect((await fetch(`${base}/api/v1/jobs/b`)).status).toBe(200);
      expect((await fetch(`${base}/nope/123`)).status).toBe(404);
      const text = await registry.metrics();
      expect(text).toMatch(/^cordum_http_requests_total\{method="GET",route="\/api\/v1\/jobs\/:id",status="200",service="api-gateway",pod="gw-1"\} 2$/m);
      expect(text).toMatch(/^cordum_http_requests_total\{method="GET",route="unmatched",status="404",service="api-gateway",pod="gw-1"\} 1$/m);
      const countLine = text.split('\n').find((l) => l.startsWith('cordum_http_request_duration_seconds_count{') && l.includes('route="/api/v1/jobs/:id"'));
      expect(countLine).toMatch(/ 2$/);
      expect(text).not.toContain('/jobs/a');
    });
  });
});
