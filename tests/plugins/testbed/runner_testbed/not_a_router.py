from base_runner import hookimpl


@hookimpl
def register_routers():
    return "/my-route"


@hookimpl
def get_weights():
    return {}
