/** Open/close tag balance of an XML document without a parser dependency: every `<x …>` closed by `</x>` or `/>`, no stray `<` or `>` in the text. */
export function wellFormed(xml: string): boolean {
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g)) {
    const [, close, name, , self] = m;
    if (self) continue;
    if (!close) stack.push(name!);
    else if (stack.pop() !== name) return false;
  }
  const stripped = xml.replace(/<[^>]*>/g, '');
  return stack.length === 0 && !/[<>]/.test(stripped);
}
