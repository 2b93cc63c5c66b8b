import { scriptSpec, type ScriptSpec } from '@cordum/redis';
import acquireLua from './lua/acquire-2.lua';
import acquireReadLua from './lua/acquire-read-3.lua';
import fencedSetLua from './lua/fencedSet-2.lua';
import releaseLua from './lua/release-1.lua';
import renewLua from './lua/renew-1.lua';

export const lockScripts: ScriptSpec[] = [
  scriptSpec('acquire-2.lua', acquireLua),
  scriptSpec('acquire-read-3.lua', acquireReadLua),
  scriptSpec('renew-1.lua', renewLua),
  scriptSpec('release-1.lua', releaseLua),
  scriptSpec('fencedSet-2.lua', fencedSetLua),
];
