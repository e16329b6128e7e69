"""When work runs: periodic maintenance now; sync scheduling, push intake and the
distributed queue join here."""
