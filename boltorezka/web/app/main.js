// Entry point of the web app served at `/`.

import { App } from './app.js';

const root = document.getElementById('app');
if (root !== null) {
  const app = new App(root);
  // Diagnostics from the browser console (and the end-to-end tests): `boltorezka.callStats()`.
  Object.defineProperty(window, 'boltorezka', { value: app, configurable: true });
  app.start();
}
