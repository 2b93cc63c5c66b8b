import { parseDocument } from 'yaml';

/**
 * YAML text to a plain value, with the parser's warnings taken as errors: `yaml` prints a warning
 * (an unresolved tag such as `!!js/function`, which it then reads as a plain string) as raw
 * multi-line text on stderr, beside the services' JSON log, and goes on. A policy or a config file
 * that does not mean what it says is refused instead. Throws an Error whose message is the first
 * line of the first error or warning; aliases are bounded by the parser's default
 * (maxAliasCount 100), so an alias bomb is an error too.
 */
export function parseYamlStrict(text: string): unknown {
  const doc = parseDocument(text, { logLevel: 'silent' });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw new Error(problem.message.split('\n')[0] ?? problem.message, { cause: problem });
  return doc.toJS();
}
