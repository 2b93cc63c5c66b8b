import { runService } from '@cordum/service-kit';
import { loadSchedulerConfig } from './config';
import { createScheduler } from './scheduler';

runService({ name: 'scheduler', load: (env) => loadSchedulerConfig(env), create: createScheduler });
