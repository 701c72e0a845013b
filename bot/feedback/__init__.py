"""Feedback on answers: 👍/👎 per answer and rater, with the question, its sources and the answerer.

Slack answers carry buttons (`bot.channels.slack.feedback`), Instagram answers quick replies,
the web chat buttons posting to ``/api/chat/feedback``; every door ends in `service.rate`.
"""
