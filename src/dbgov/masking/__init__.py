"""Dynamic data masking: turn result values into their masked replacements.

`maskers` maps one raw wire value (text or binary format) to its replacement for a
column's mask; `pii` finds personal data inside free text. Both are pure: no I/O,
no protocol. The row and COPY rewriting that calls them lives beside them.
"""
