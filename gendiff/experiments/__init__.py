"""The published experiments as data: each returns run configs (nothing is built here) and the
scoring its table uses. The recipes are the command lines over these."""
