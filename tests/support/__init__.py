"""What the tests share that is not a test: backends to run on, jobs, strategies, reaching
PostgreSQL, a browser, the TypeScript compiler or a fresh install. Nothing here is named
``test_*``, so pytest collects nothing from it; fixtures stay in the conftests, which use
these modules."""
