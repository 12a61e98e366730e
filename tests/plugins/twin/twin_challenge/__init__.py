from base_runner import hookimpl


@hookimpl
def get_weights():
    return {}
