from base_runner import hookimpl


@hookimpl
def register_routers():
    return None
