import { runService } from '@cordum/service-kit';
import { createEchoWorker } from './app';
import { loadEchoWorkerConfig } from './config';

runService({ name: 'echo-worker', load: loadEchoWorkerConfig, create: createEchoWorker });
