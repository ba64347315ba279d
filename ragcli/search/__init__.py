"""Search: a question -> the chunks its asker may read (ACL prefilter inside both legs, hybrid
vector + full text), who the asker is (identity), and retrieved text screened as data (screening)."""
