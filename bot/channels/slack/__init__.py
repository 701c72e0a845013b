"""Slack: Events API and OAuth install through slack-bolt AsyncApp, our installation store, chat.postMessage."""
