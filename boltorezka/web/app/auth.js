// The first screen: sign in, or create an account (which signs in too).

import { h, icon } from './dom.js';
import { describeError } from './text.js';

/**
 * @param {import('../sdk/rest.js').ApiClient} api
 * @param {() => void} onSignedIn
 * @returns {HTMLElement}
 */
export function authView(api, onSignedIn) {
  let mode = /** @type {'signin' | 'signup'} */ ('signin');
  const error = h('p', { class: 'error-text', role: 'alert', hidden: true });
  const username = h('input', {
    class: 'input',
    id: 'auth-username',
    name: 'username',
    autocomplete: 'username',
    required: true,
    autocapitalize: 'none',
    spellcheck: false,
  });
  const password = h('input', {
    class: 'input',
    id: 'auth-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const displayName = h('input', { class: 'input', id: 'auth-display', name: 'displayName', autocomplete: 'nickname', maxLength: 64 });
  const usernameHint = h('span', { class: 'hint' }, 'Letters, digits, dots, dashes or underscores; 3 to 32 of them.');
  const passwordHint = h('span', { class: 'hint' }, 'At least 8 characters.');
  const nameField = h(
    'div',
    { class: 'field' },
    h('label', { for: 'auth-display' }, 'Display name ', h('span', { class: 'hint' }, '(optional)')),
    displayName,
  );
  const submit = h('button', { class: 'btn primary block', type: 'submit' }, 'Sign in');
  const tabIn = h('button', { class: 'tab', type: 'button', role: 'tab', onclick: () => setMode('signin') }, 'Sign in');
  const tabUp = h('button', { class: 'tab', type: 'button', role: 'tab', onclick: () => setMode('signup') }, 'Create account');

  /** @param {'signin' | 'signup'} next */
  function setMode(next) {
    mode = next;
    const signup = mode === 'signup';
    tabIn.setAttribute('aria-selected', String(!signup));
    tabUp.setAttribute('aria-selected', String(signup));
    nameField.hidden = !signup;
    usernameHint.hidden = !signup;
    passwordHint.hidden = !signup;
    password.autocomplete = signup ? 'new-password' : 'current-password';
    password.minLength = signup ? 8 : 1;
    submit.textContent = signup ? 'Create account' : 'Sign in';
    error.hidden = true;
  }

  /** @param {SubmitEvent} event */
  async function onSubmit(event) {
    event.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const credentials = { username: username.value.trim(), password: password.value };
      if (mode === 'signup') await api.register({ ...credentials, displayName: displayName.value.trim() || undefined });
      else await api.login(credentials);
      onSignedIn();
    } catch (failure) {
      error.textContent = describeError(failure);
      error.hidden = false;
      submit.disabled = false;
      (mode === 'signin' ? password : username).focus();
    }
  }

  const form = h(
    'form',
    { onsubmit: onSubmit, novalidate: false },
    error,
    h('div', { class: 'field' }, h('label', { for: 'auth-username' }, 'Username'), username, usernameHint),
    h('div', { class: 'field' }, h('label', { for: 'auth-password' }, 'Password'), password, passwordHint),
    nameField,
    submit,
  );
  setMode('signin');
  const view = h(
    'main',
    { class: 'auth' },
    h(
      'section',
      { class: 'auth-card', 'aria-labelledby': 'auth-title' },
      h('div', { class: 'brand' }, h('span', { class: 'brand-mark' }, icon('bolt')), h('span', { class: 'brand-name', id: 'auth-title' }, 'Boltorezka')),
      h('p', { class: 'brand-tag' }, 'Chat, voice and video for your community.'),
      h('div', { class: 'tabs', role: 'tablist' }, tabIn, tabUp),
      form,
    ),
  );
  queueMicrotask(() => username.focus());
  return view;
}
