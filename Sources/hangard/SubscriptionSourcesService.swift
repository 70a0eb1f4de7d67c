import HangarRuntime
import ServiceLifecycle

/// Each app's push subscriptions as a `Service` of the daemon's group: fetches the apps' programmatic lists and
/// tells the delivery sink of every change until the group's graceful shutdown reaches it, which is before the app
/// channels close (it runs after their health service in the group).
struct SubscriptionSourcesService: Service {
    let sources: SubscriptionSources

    func run() async {
        await cancelWhenGracefulShutdown { await sources.run() }
    }
}
