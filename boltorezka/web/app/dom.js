// Building DOM without a framework. Text always goes in through text nodes (never HTML),
// so nothing a user writes can become markup.

/**
 * @typedef {Record<string, unknown> & {class?: string, dataset?: Record<string, string>}} Props
 * @typedef {Node | string | number | null | undefined | false} Child
 */

/**
 * `h('button', {class: 'btn', onclick}, 'Send')`. Props starting with `on` become
 * listeners, `class`/`dataset` what they say; `true`/`false` toggle boolean attributes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') element.className = String(value);
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), /** @type {EventListener} */ (value));
    } else if (value === true) element.setAttribute(key, '');
    else if (key === 'style') throw new Error('inline styles break the Content-Security-Policy; use a class');
    else if (key in element && key !== 'list' && key !== 'form') {
      /** @type {any} */ (element)[key] = value;
    } else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

/**
 * @param {Element | DocumentFragment} parent
 * @param {(Child | Child[])[]} children
 */
export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(typeof child === 'number' ? String(child) : child);
  }
}

/** @param {Element} element @param {...(Child | Child[])} children */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

const SVG = 'http://www.w3.org/2000/svg';

// Simple line icons on a 24-unit grid, drawn for this app.
/** @type {Record<string, string>} */
const PATHS = {
  hash: 'M5 9h14M4 15h14M10 3 8 21M16 3l-2 18',
  lock: 'M6 11h12v10H6zM8 11V8a4 4 0 0 1 8 0v3',
  user: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21a8 8 0 0 1 16 0',
  users: 'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21a7 7 0 0 1 14 0M16 3.5a4 4 0 0 1 0 7M18 14a6 6 0 0 1 4 7',
  plus: 'M12 5v14M5 12h14',
  search: 'M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14zM20 20l-4-4',
  send: 'M4 12 20 4l-6 16-3-7-7-1z',
  video: 'M3 7h12v10H3zM15 10l6-3v10l-6-3',
  videoOff: 'M3 7h12v10H3zM15 10l6-3v10l-6-3M2 3l20 18',
  mic: 'M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3',
  micOff: 'M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3M3 3l18 18',
  hangup: 'M3 14c5-5 13-5 18 0l-2 3-4-2v-3a9 9 0 0 0-6 0v3l-4 2z',
  back: 'M15 5l-7 7 7 7',
  edit: 'M4 20h4L19 9l-4-4L4 16zM13 7l4 4',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
  settings: 'M4 7h9M17 7h3M15 5v4M4 17h3M11 17h9M9 15v4',
  logout: 'M9 4H5v16h4M16 8l4 4-4 4M20 12H10',
  chat: 'M4 5h16v11H9l-5 4z',
  bolt: 'M13 3 6 13h5l-1 8 7-10h-5z',
};

/**
 * @param {keyof typeof PATHS | string} name
 * @param {string} [label] for assistive technology; omitted: decorative
 * @returns {SVGSVGElement}
 */
export function icon(name, label) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', '2');
  svg.setAttribute('stroke-linecap', 'round');
  svg.setAttribute('stroke-linejoin', 'round');
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', PATHS[name] ?? PATHS.chat);
  svg.append(path);
  return svg;
}

/**
 * A round avatar with initials, coloured by a stable hash of the id.
 * @param {{id: string, name: string, status?: string | null, small?: boolean}} who
 */
export function avatar({ id, name, status, small = false }) {
  let hash = 0;
  for (const char of id) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  const letters = name
    .split(/[\s._-]+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((part) => [...part][0]?.toUpperCase() ?? '')
    .join('');
  const element = h('span', { class: small ? 'avatar small' : 'avatar', 'aria-hidden': 'true' }, letters || '?');
  element.style.setProperty('--hue', String(hash % 360));
  if (status) element.dataset.status = status;
  return element;
}
