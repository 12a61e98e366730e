"""Loading challenges through their entry points, and the rules the contract puts on their routes and workers."""
