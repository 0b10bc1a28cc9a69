// A small typed event emitter: `on` returns the function that unsubscribes, and a listener
// that throws is reported on the console without stopping the others.

/** @template {Record<string, any>} Events */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(event: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {(event: Events[K]) => void} listener
   * @returns {() => void} unsubscribe
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (set === undefined) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} event
   */
  emit(type, event) {
    const set = this._listeners.get(type);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(event);
      } catch (error) {
        console.error(`listener for ${String(type)} failed`, error);
      }
    }
  }
}
