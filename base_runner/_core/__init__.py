"""The bottom layer: errors, settings, logging, correlation ids, the wire's shapes, credentials and the runtime's
part states. Imports nothing else of the runner.
"""
