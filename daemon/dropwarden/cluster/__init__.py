"""Judging spread over hosts through Redis Streams: `watch` hosts send jobs, `judge` hosts judge them.

Role "all" (the default) never imports anything from here but `settings` and `flow`: no Redis is needed."""
