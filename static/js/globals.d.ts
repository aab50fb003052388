// The vendored libraries that index.html loads as classic scripts (static/vendor/),
// as the page's modules see them: globals, typed only as far as the page uses them.
declare const markdownit: (options?: object) => {
  render(source: string): string;
  renderer: { rules: Record<string, any> };
  [key: string]: any;
};
declare const DOMPurify: {
  sanitize(dirty: string, config?: object): string;
  addHook(entry: string, hook: (node: Element, data?: any) => void): void;
  [key: string]: any;
};
declare const hljs: {
  highlightElement(element: HTMLElement): void;
  [key: string]: any;
};
