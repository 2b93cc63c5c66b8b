// P337: the AbortSignal a handler gets. Node runs a signal's abort listeners inside abort() (a
// cancel, a running timeout, stop()) and catches nothing: a listener that throws, or an async one
// that rejects, was an uncaught exception a tick later. Under runService that stopped the worker
// (every other running job answered FAILED_RETRYABLE worker_shutdown, the process exited 1); in a
// plain process it crashed. A common pattern, `signal.addEventListener('abort', async () => {
// await cleanup() })` with a cleanup that fails, turned every cancel into a restart. Listeners
// added to this signal (addEventListener, onabort) run guarded: what they throw or reject with
// goes to `onError`, and the other listeners and the worker go on.

type ListenerFn = (this: unknown, event: Event) => unknown;
type Listener = ListenerFn | { handleEvent(event: Event): unknown };
type AddOptions = Parameters<AbortSignal['addEventListener']>[2];
type RemoveOptions = Parameters<AbortSignal['removeEventListener']>[2];

export function guardSignal(signal: AbortSignal, onError: (err: unknown) => void): AbortSignal {
  const wrappers = new WeakMap<object, ListenerFn>();
  const wrap = (listener: Listener): ListenerFn => {
    let w = wrappers.get(listener);
    if (w === undefined) {
      w = function (this: unknown, event: Event): void {
        try {
          const r: unknown = typeof listener === 'function' ? listener.call(this, event) : listener.handleEvent(event);
          if (r instanceof Promise) r.catch(onError);
        } catch (err) {
          onError(err);
        }
      };
      wrappers.set(listener, w);
    }
    return w;
  };
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  const onabort = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'onabort') ?? Object.getOwnPropertyDescriptor(EventTarget.prototype, 'onabort');
  let handler: ((this: AbortSignal, ev: Event) => unknown) | null = null;
  Object.defineProperties(signal, {
    addEventListener: {
      value: (type: string, listener: Listener | null, options?: AddOptions) => {
        if (listener !== null) add(type, wrap(listener), options);
      },
      configurable: true,
      writable: true,
    },
    removeEventListener: {
      value: (type: string, listener: Listener | null, options?: RemoveOptions) => {
        if (listener !== null) remove(type, wrappers.get(listener) ?? listener, options);
      },
      configurable: true,
      writable: true,
    },
    ...(onabort?.set
      ? {
          onabort: {
            get: () => handler,
            set: (h: unknown) => {
              handler = typeof h === 'function' ? (h as (this: AbortSignal, ev: Event) => unknown) : null;
              onabort.set?.call(signal, handler === null ? null : wrap(handler as ListenerFn));
            },
            configurable: true,
          },
        }
      : {}),
  });
  return signal;
}
