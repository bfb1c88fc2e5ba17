"""Development scaffolding for nextn: tiny random models of every architecture (in nextn's own and in
the published checkpoint shapes), the MTP reference used by the tests, and benchmark model makers.
Nothing in `nextn` imports this package."""
