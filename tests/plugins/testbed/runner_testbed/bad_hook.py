from base_runner import hookimpl


@hookimpl
def get_weights():
    return {}


@hookimpl
def get_weight():  # a typo the runner must catch
    return {}
