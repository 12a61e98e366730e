"""Computing, checking and caching a challenge's weights, and the endpoints the seed's master pulls them from."""
