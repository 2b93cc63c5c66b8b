/**
 * The one place key names are assembled (STYLE 6). Every lib makes a KeyBuilder and derives all
 * its keys from it, so a prefix (tests) or a hash tag (cluster) is applied uniformly.
 */
export class KeyBuilder {
  constructor(private readonly prefix = '') {}

  /** `prefix:a:b:c` (no prefix segment when the prefix is empty). */
  key(...parts: string[]): string {
    return (this.prefix ? [this.prefix, ...parts] : parts).join(':');
  }

  /**
   * `<base>:{<id>}`: the braces make Redis Cluster hash only `<id>`, so every key tagged with
   * the same id lands in one slot and a Lua script may touch all of them (D4).
   */
  tagged(base: string, id: string): string {
    return `${this.key(base)}:{${id}}`;
  }
}
