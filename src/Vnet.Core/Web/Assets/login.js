'use strict';
// The login page: POST /login with the token (and the header every change carries); the server
// answers with the session cookie (HttpOnly, SameSite=Strict), then the page loads.
document.getElementById('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const error = document.getElementById('login-error');
  error.textContent = '';
  try {
    const r = await fetch('/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Vnet': '1' },
      body: JSON.stringify({ token: document.getElementById('token').value }),
    });
    if (r.ok) {
      location.replace('/');
      return;
    }
    const body = await r.json().catch(() => ({}));
    error.textContent = body.error || ('refused: ' + r.status);
  } catch (x) {
    error.textContent = 'no answer: ' + x;
  }
});
